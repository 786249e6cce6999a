"""The HTTP (JSON) transport: thin routes over the domain modules."""
