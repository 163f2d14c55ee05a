"""Safe file uploads: size caps, MIME policy (libmagic) and virus scanning (clamd) before Dust."""
