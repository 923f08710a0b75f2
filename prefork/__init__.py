"""prefork: a preforking master with waitress workers, a command protocol, and reloads that drop nothing."""
