"""Kafka outside Faust: connections (TLS, SASL) and the clients streamsync opens with them."""
