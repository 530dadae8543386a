"""Every size limit in one place (plain constants: the rules engine imports them too).

LiveKit rejects names over 256 characters; the portal keeps participant metadata, attributes
and job metadata under 64,000 bytes, below LiveKit's own limits, so a token or dispatch it
makes is never refused for its size."""

MAX_NAME_LENGTH = 256
MAX_METADATA_BYTES = 64_000
