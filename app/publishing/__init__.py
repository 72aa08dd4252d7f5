"""Publishing: the asyncio Kafka producer, the circuit breaker and the event publisher."""
