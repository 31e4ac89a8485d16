"""Secure aggregation: SecAgg+ (Bell et al., CCS 2020) on top of SecAgg (Bonawitz et al., CCS 2017).

Pure numpy and standard library; cryptography enters through the ports of :mod:`.crypto`.

==============  ==================================================================================
``encoding``    fixed point in Z_{2^32} (updates) and 128-bit limbs in Z_{2^64} (statistics)
``shamir``      t-of-n sharing of 32-byte secrets over GF(2^521 - 1)
``graph``       the seeded Harary neighbour graph, degree O(log n), and the threshold
``crypto``      the ``SecAggCrypto`` / identity ports the adapters implement
``params``      settings, per-instance parameters and their wire names
``client``      a participant's state machine (advertise, share keys, masked input, unmask)
``server``      one bucket's server state machine (relay, sum, unmask)
``round``       one secure aggregation over all buckets, as stages of tasks and replies
``vectors``     what a participant contributes and what the coordinator makes of a sum
``driver``      the round engine's handle on all of the above
==============  ==================================================================================
"""
