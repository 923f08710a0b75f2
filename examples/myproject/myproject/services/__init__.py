"""Business logic between the views and the models."""
