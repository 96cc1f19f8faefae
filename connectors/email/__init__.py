"""Email: the SMTP connection and the Bytewax sink that sends the queued jobs."""
