"""myproject: a small catalogue web application served by prefork with instant reloads."""
