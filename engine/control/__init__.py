"""The Twilio control plane: what the engine says to Twilio, and checks of what Twilio says.

Pure helpers (no I/O): :mod:`~engine.control.signature` (``X-Twilio-Signature``),
:mod:`~engine.control.token` (the media stream's signed token), :mod:`~engine.control.twiml`.
On trio and httpx: :mod:`~engine.control.rest` (the REST client), and the component's
actions, :mod:`~engine.control.messages` (sendSMS, sendWhatsAppMessage) and
:mod:`~engine.control.calls` (makeCall). The HTTP routes that use them are
:mod:`engine.webhooks`.
"""
