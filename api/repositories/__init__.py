"""Repositories and stores: all SQL of each table in the module named after it, and the
Redis stores (reset codes, rate limits, the token cache). They import only plumbing
(``api.settings``, ``api.db``, ``api.kv``, ``api.errors``) and each other."""
