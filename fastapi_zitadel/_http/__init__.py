"""HTTP plumbing, apart from any protocol: the pooled clients with capped bodies, which URLs
we send tokens to, and requests as flows retried within a deadline (sync or async)."""
