"""The code version shown on every page; edit it and watch every worker pick it up."""
VERSION = "1.0"
