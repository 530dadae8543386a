"""The LiveKit boundary: everything that speaks LiveKit's protocols, and nothing else.

`client` calls LiveKit's server API (Twirp over HTTP, with a deadline over each exchange),
`tokens` builds and signs participant and API JWTs, `webhooks` verifies LiveKit's webhooks.
The bottom layer of the portal: it imports no app (only `dispatchportal`'s shared kernel)."""
