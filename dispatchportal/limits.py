"""Every size limit in one place (plain constants: the rules engine imports them too).

LiveKit rejects names over 256 characters; the portal keeps participant metadata, attributes
and job metadata under 64,000 bytes, below LiveKit's own limits, so a token or dispatch it
makes is never refused for its size."""

MAX_NAME_LENGTH = 256
MAX_METADATA_BYTES = 64_000

# A dispatch's LiveKit deployment: livekit/protocol's ValidateDeployment allows at most 64 bytes
# and no '_', spaces or control characters; the portal also keeps it to printable ASCII, so
# that one pattern states the rule exactly (the OpenAPI schema shows it).
MAX_DEPLOYMENT_LENGTH = 64
DEPLOYMENT_PATTERN = r"^[!-^`-~]*$"
