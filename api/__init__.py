"""Identity service: the password endpoints of ZITADEL's v2 User Service, done strictly."""
