"""`myonode demo`: a node and a receiving archive on loopback, a real or generated CT study sent
through them, and the results printed. Also the synthetic studies the demo and the tests use.
"""
