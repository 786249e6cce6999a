"""Domain services: what the service does, in plain keyword-only functions that take the
``Context`` (``ctx``) of stores they use. They know no transport; transports (``api.http``)
and workers call them. They import repositories and plumbing, never a transport."""
