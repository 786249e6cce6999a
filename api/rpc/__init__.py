"""The RPC transport: ZITADEL's services over Connect, gRPC-Web and gRPC (connectrpc),
from the .proto files in proto/ (code generated into gen/ by scripts/protogen)."""
