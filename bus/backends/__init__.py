"""Transport backends, loaded lazily by scheme (see ``bus.api.BACKENDS``)."""
