"""HTTP views: each module maps paths to functions taking (environ) and returning a Response."""
