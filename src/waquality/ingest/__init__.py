"""The request path: verify the signature, make the raw body durable, acknowledge. Nothing else."""
