"""Phalanx: federated learning for cyber threat detection.

Organizations keep their traffic at home, train locally and send only protected model updates;
a coordinator combines them into one detector that every member runs on its own traffic.
"""

__version__ = "0.1.0"
