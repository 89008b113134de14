"""Dash pages of the operations dashboard (thin: layouts and callbacks that call ``delula``).

``layout`` is the shell (navbar, sign-in gate, shared UI pieces), ``access`` who may do what,
``login`` the sign-in form; the other modules are pages Dash registers by themselves.
"""
