"""The audit trail: every admin change, who made it, and the state before and after."""
