"""The README's screenshots and the script that makes them."""
