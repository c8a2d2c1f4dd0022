"""Bridges to other imaging libraries.

Each bridge lives in its own module and imports its library only when that module is imported
(e.g. ``fastsd.interop.deepinv`` needs ``pip install 'fastsd[deepinv]'``); importing fastsd or this
package never requires them.
"""
