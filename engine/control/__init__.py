"""The Twilio control plane: what the engine says to Twilio, and checks of what Twilio says.

Pure helpers (no I/O): :mod:`~engine.control.signature` (``X-Twilio-Signature``),
:mod:`~engine.control.token` (the media stream's signed token), :mod:`~engine.control.twiml`.
The component's inputs, also pure: :mod:`~engine.control.validation` (every parameter's
check, shared by the CLI, the task entry and the keyword functions),
:mod:`~engine.control.tasks` (the documentation's task objects) and
:mod:`~engine.control.credentials` (the connection). On trio and httpx:
:mod:`~engine.control.rest` (the REST client), and the component's actions,
:mod:`~engine.control.messages` (sendSMS, sendWhatsAppMessage) and :mod:`~engine.control.calls`
(makeCall). The HTTP routes that use them are :mod:`engine.webhooks`; the task entry that runs
them all is :mod:`engine.component`.
"""
