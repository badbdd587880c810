#!/usr/bin/env python

# Copyright (c) Twisted Matrix Laboratories.
# See LICENSE for details.
#
# Taken from Twisted's documentation: docs/core/howto/listings/process/process.py in
# https://github.com/twisted/twisted (commit 64661601a1e492a9448ac1011deb9cd9467a9e30),
# MIT licence (Twisted's LICENSE). The listing is Python 2: it writes str to the child and
# adds bytes to a str, which Twisted's own reactor refuses on Python 3 as well. Changed
# for Python 3 and nothing else (each change is marked "py3:"):
#   - the verses and self.data are bytes, the split pattern rb"", and the line count
#     is decoded to print it;
#   - the last three lines run only as a script, with the reactor imported there (so
#     that importing MyPP installs no reactor: tests/test_compat_twisted_process.py runs
#     MyPP on polyloop's reactor and gives the module the ``reactor`` it stops).
# ruff: noqa: B007, RUF059, UP031


import re

from twisted.internet import protocol


class MyPP(protocol.ProcessProtocol):
    def __init__(self, verses):
        self.verses = verses
        self.data = b""  # py3: bytes

    def connectionMade(self):
        print("connectionMade!")
        for i in range(self.verses):
            self.transport.write(
                b"Aleph-null bottles of beer on the wall,\n"  # py3: bytes
                + b"Aleph-null bottles of beer,\n"
                + b"Take one down and pass it around,\n"
                + b"Aleph-null bottles of beer on the wall.\n"
            )
        self.transport.closeStdin()  # tell them we're done

    def outReceived(self, data):
        print("outReceived! with %d bytes!" % len(data))
        self.data = self.data + data

    def errReceived(self, data):
        print("errReceived! with %d bytes!" % len(data))

    def inConnectionLost(self):
        print("inConnectionLost! stdin is closed! (we probably did it)")

    def outConnectionLost(self):
        print("outConnectionLost! The child closed their stdout!")
        # now is the time to examine what they wrote
        # print("I saw them write:", self.data)
        (dummy, lines, words, chars, file) = re.split(rb"\s+", self.data)  # py3: rb""
        print("I saw %s lines" % lines.decode())  # py3: decode

    def errConnectionLost(self):
        print("errConnectionLost! The child closed their stderr.")

    def processExited(self, reason):
        print("processExited, status %d" % (reason.value.exitCode,))

    def processEnded(self, reason):
        print("processEnded, status %d" % (reason.value.exitCode,))
        print("quitting")
        reactor.stop()  # py3: the module's reactor, set below or by a test


if __name__ == "__main__":  # py3: only as a script
    from twisted.internet import reactor

    pp = MyPP(10)
    reactor.spawnProcess(pp, "wc", ["wc"], {})
    reactor.run()
