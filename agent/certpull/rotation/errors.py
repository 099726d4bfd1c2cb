"""Errors of the rotation function. Raising one fails the step, so Secrets Manager records a failed
rotation and AWSCURRENT stays where it was. Settings errors are ``certpull.errors.ConfigError``."""

from __future__ import annotations

from certpull.errors import CertpullError


class RotationError(CertpullError):
    """The rotation cannot go on: the secret's versions are not staged as the step expects."""


class IssuingError(RotationError):
    """ACM or ACM PCA did not produce a usable certificate."""
