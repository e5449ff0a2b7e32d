"""The Twilio control plane: signatures, stream tokens, TwiML, REST client, actions and triggers.

Everything here is pure: no trio, no quart. The server wires these helpers to HTTP and WebSockets.
"""
