"""The service: the link flow's backend half and the webhook receivers (``app.create_app``)."""
