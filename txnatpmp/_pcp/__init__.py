"""
PCP (RFC 6887): the sans-IO wire format, the epoch check, the retransmission timer and the
client.  The public names are re-exported from L{txnatpmp}.
"""
