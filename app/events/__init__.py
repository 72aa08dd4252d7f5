"""What the service checks of an event beyond its model (the models are `event_models`, shared with
the client): the accepted time window, validation errors in the API's shape."""
