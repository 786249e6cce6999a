"""The one error hierarchy. Every layer raises these; each transport maps them once.

An error carries what the contract says of it and nothing of any transport: the gRPC code,
the ZITADEL id (``COMMAND-3M0fs`` and friends) and the message. ``api.http.errors`` turns
them into an HTTP status and the JSON body ``{"code", "message": "<message> (<id>)",
"details": [{"@type", "id", "message"}]}``; errors without an id (request validation, a
missing header) carry the plain message and no details.
"""

from __future__ import annotations

import logging
import traceback
from typing import ClassVar

import asyncpg
import redis.exceptions

from api import outages

log = logging.getLogger("identity.errors")


class ServiceError(Exception):
    grpc_code: ClassVar[int] = 13
    error_id: ClassVar[str | None] = None
    default_message: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, *, retry_after: int | None = None) -> None:
        self.message = message or self.default_message
        self.retry_after = retry_after
        super().__init__(self.message)

    @property
    def wire_message(self) -> str:
        return f"{self.message} ({self.error_id})" if self.error_id else self.message


# --- gRPC code families -------------------------------------------------------------------


class InvalidArgument(ServiceError):
    grpc_code = 3


class NotFound(ServiceError):
    grpc_code = 5


class AlreadyExists(ServiceError):
    grpc_code = 6


class PermissionDenied(ServiceError):
    grpc_code = 7


class ResourceExhausted(ServiceError):
    grpc_code = 8


class FailedPrecondition(ServiceError):
    grpc_code = 9


class Internal(ServiceError):
    grpc_code = 13


class Unavailable(ServiceError):
    grpc_code = 14


class Unauthenticated(ServiceError):
    grpc_code = 16


# --- request shape ------------------------------------------------------------------------


class RequestInvalid(InvalidArgument):
    """Body or path validation; the message is in protoc-gen-validate's form, no details."""


# --- authentication and permissions -------------------------------------------------------


class AuthHeaderMissing(Unauthenticated):
    default_message = "auth header missing"


class TokenInvalid(Unauthenticated):
    error_id, default_message = "AUTH-7fs1e", "Errors.Token.Invalid"


class NoPermission(PermissionDenied):
    error_id, default_message = "AUTH-AWfge", "No matching permissions found"


# --- users and passwords ------------------------------------------------------------------


class UserNotFound(NotFound):
    error_id, default_message = "COMMAND-SAF4f", "User could not be found"


class OrganizationNotFound(NotFound):
    error_id, default_message = "COMMAND-Org404", "Organization could not be found"


class SessionNotFound(NotFound):
    error_id, default_message = "COMMAND-Ses404", "Session could not be found"


class UsernameTaken(AlreadyExists):
    error_id, default_message = "COMMAND-k2un8", "Username is already taken"


class UsernameDomainReserved(InvalidArgument):
    """A username ending in ``@<domain of another organization>`` (its login name would be
    that organization's); ZITADEL's ``Errors.User.DomainNotAllowedAsUsername``."""

    error_id, default_message = "COMMAND-SFd21", "Domain is already reserved and cannot be used"


class UserIdTaken(AlreadyExists):
    error_id, default_message = "COMMAND-k4idX", "User already exists"


class UserLocked(FailedPrecondition):
    error_id, default_message = "COMMAND-JLK35", "User is locked"


class UserNotActive(FailedPrecondition):
    error_id, default_message = "COMMAND-Sfe4g", "User is not active"


class UserNotLocked(FailedPrecondition):
    error_id, default_message = "COMMAND-SFd2s", "User is not locked"


class UserNotInactive(FailedPrecondition):
    error_id, default_message = "COMMAND-Sfe5h", "User is not inactive"


class PasswordInvalid(InvalidArgument):
    error_id, default_message = "COMMAND-3M0fs", "Password is invalid"


class PasswordUnchanged(FailedPrecondition):
    error_id = "COMMAND-Aesh5"
    default_message = "New password cannot be the same as your current password"


class PasswordNotSet(FailedPrecondition):
    error_id, default_message = "COMMAND-Fds3s", "User has not set a password"


class HashInvalid(InvalidArgument):
    error_id, default_message = "COMMAND-HashI", "Hashed password is invalid or unsupported"


class EmailInvalid(InvalidArgument):
    """Not one mailbox we could send to (``api.domain.emails``); ZITADEL's
    ``Errors.User.Email.Invalid``."""

    error_id, default_message = "EMAIL-599BI", "Email is invalid"


class CodeNotFound(FailedPrecondition):
    error_id, default_message = "COMMAND-2M9fs", "Code not found"


class CodeExpired(FailedPrecondition):
    error_id, default_message = "CODE-QvUQ4P", "Code is expired"


class CodeInvalid(InvalidArgument):
    error_id, default_message = "CODE-woT0xc", "Code is invalid"


class NotificationTypeUnsupported(FailedPrecondition):
    error_id, default_message = "NOTIFY-Sms0n", "SMS notifications are not supported"


# --- password policy ----------------------------------------------------------------------


class PolicyViolation(InvalidArgument):
    """A weak new password: never spends a code or counts as a wrong try."""


class PasswordTooShort(PolicyViolation):
    error_id, default_message = "DOMAIN-HuJf6", "Password is too short"


class PasswordNoLowercase(PolicyViolation):
    error_id, default_message = "DOMAIN-co3Xw", "Password must contain lower case"


class PasswordNoUppercase(PolicyViolation):
    error_id, default_message = "DOMAIN-VoaRj", "Password must contain upper case"


class PasswordNoNumber(PolicyViolation):
    error_id, default_message = "DOMAIN-ZBv4H", "Password must contain number"


class PasswordNoSymbol(PolicyViolation):
    error_id, default_message = "DOMAIN-ZDLwA", "Password must contain symbol"


class PasswordTooCommon(PolicyViolation):
    error_id, default_message = "DOMAIN-Bl0ck", "Password is too common"


class PasswordBreached(PolicyViolation):
    error_id = "DOMAIN-Br3ch"
    default_message = "Password has appeared in a data breach"


class PasswordReused(PolicyViolation):
    error_id, default_message = "DOMAIN-H1st0", "Password was used before"


class UrlTemplateInvalid(InvalidArgument):
    error_id, default_message = "DOMAIN-oGh5e", "URL Template is invalid"


# --- capacity -----------------------------------------------------------------------------


class RateLimited(ResourceExhausted):
    error_id, default_message = "LIMIT-R4te1", "Too many requests"


class Overloaded(Unavailable):
    error_id, default_message = "SERVER-0verl", "Service is overloaded"


class StoreUnavailable(Unavailable):
    error_id, default_message = "SERVER-Unav1", "Service unavailable"


class InternalError(Internal):
    error_id, default_message = "SERVER-Int3r", "Internal error"


# --- anything else --------------------------------------------------------------------------

# Postgres or Redis out of reach: a 503 / UNAVAILABLE the client may retry, never a 500.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, timeouts (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,
    # A pooled connection whose server went away mid-protocol (a restart, a killed backend).
    asyncpg.exceptions.InternalClientError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def as_service_error(exc: BaseException) -> ServiceError:
    """The contract's error for any exception a transport catches.

    A store out of reach is ``StoreUnavailable``; anything unexpected is logged by type and
    stack frames only (an exception's text may carry a parameter value) and answered as a
    bare ``InternalError``.
    """
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, UNAVAILABLE_ERRORS):
        # Said once per outage by api.outages, not once per request.
        log.debug("store unavailable: %s", type(exc).__name__)
        outages.OUTAGES.noticed()
        return StoreUnavailable(retry_after=1)
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s\n%s", type(exc).__name__, frames)
    return InternalError()
