"""Write one gRPC request frame (SetPassword, admin set) to stdout, for h2load's ``-d``."""

from __future__ import annotations

import argparse
import struct
import sys

from api.rpc.gen.zitadel.user.v2 import password_pb2
from api.rpc.gen.zitadel.user.v2 import user_service_pb2 as user_pb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    args = parser.parse_args()
    message = user_pb.SetPasswordRequest(
        user_id=args.user, new_password=password_pb2.Password(password=args.password)
    ).SerializeToString()
    # The gRPC frame: not compressed (0), big-endian length, the message.
    sys.stdout.buffer.write(struct.pack(">BI", 0, len(message)) + message)


if __name__ == "__main__":
    main()
