"""Compatibility layers for code written against another framework's interfaces.

Rule: nothing here is imported by ``import polyloop``, and importing a module of this
package imports no framework; the framework is loaded when a name of the layer is first
used, with an error naming the extra to install if it is missing.

- ``polyloop.compat.twisted``: unmodified Twisted protocols and factories on every
  polyloop backend (a Twisted ``ITCPTransport`` over a polyloop transport, a reactor-like
  object for code that takes a ``reactor`` or ``clock``), and the reverse: polyloop
  protocols under a Twisted application's own ``listenTCP``.
"""

__all__: list[str] = []
