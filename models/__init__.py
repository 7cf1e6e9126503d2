"""celmask."""
