"""The `context.origin` values a Dust workspace API key may send with a user message.

Dust's SDK schema knows more origins (`USER_MESSAGE_ORIGINS` in @dust-tt/client 1.2.8) and turns
any other value into "api" (`.catch("api")`), but the server refuses all but these to an API key
with a 400 (`isUserMessageContextValid` in front/lib/api/assistant/conversation.ts); "zendesk"
would also need an `x-zendesk-user-id` header, which the bridge never sends.
"""

API_KEY_ORIGINS: frozenset[str] = frozenset({"api", "excel", "gsheet", "make", "n8n", "powerpoint", "zapier"})
