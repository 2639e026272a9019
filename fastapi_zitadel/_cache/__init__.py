"""Cache tiers: the base class a shared tier extends, the in-process tiers, Redis."""
