"""The spool: accepted records Kafka could not take yet, kept in a database until the relay delivers them."""
