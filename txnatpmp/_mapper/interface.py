"""
L{IPortMapper}: what the service asks of a protocol, whichever one the gateway speaks.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IPortMapper(Interface):
    """
    One protocol (NAT-PMP, PCP, later UPnP-IGD) talking to one gateway, for a keeper of
    mappings.  Requests return Deferreds; cancelling one withdraws it.  A request given
    C{within} gives up (with L{txnatpmp.GatewayTimeout}) after that many seconds at the latest;
    without it the protocol's own schedule applies.
    """

    method = Attribute("The protocol: 'natpmp', 'pcp' or 'upnp'.")
    gateway = Attribute("The L{txnatpmp.Gateway} it talks to.")
    last_heard = Attribute("The clock's time of the gateway's last answer, or None.")
    silence_after = Attribute(
        "Seconds of hearing nothing at all after which an unanswered request means the "
        "gateway is gone, not one request unlucky.")

    def map(spec, lifetime, previous=None, within=None):  # type: ignore[no-untyped-def]
        """
        Create the mapping C{spec} for C{lifetime} seconds, or make it again after the gateway
        lost it: C{previous} is the mapping it had, whose external port (and for PCP, nonce
        and address) the request suggests.  Fires with the L{txnatpmp.Mapping} granted.
        """

    def renew(mapping, lifetime, within=None):  # type: ignore[no-untyped-def]
        """Renew C{mapping} (the protocol, and nonce, that made it) for C{lifetime} seconds."""

    def delete(spec, mapping=None, within=None):  # type: ignore[no-untyped-def]
        """
        Delete C{spec}'s mapping: C{mapping} as granted, or C{None} when a create may have
        been granted unseen.  Fires once the gateway confirmed it.
        """

    def external_address():  # type: ignore[no-untyped-def]
        """Fires with the gateway's L{txnatpmp.ExternalAddress} (epoch 0 where none)."""

    def renewal_times(lifetime, rng):  # type: ignore[no-untyped-def]
        """
        When to renew a mapping granted for C{lifetime} seconds, in seconds after the grant:
        the first renewal, then the later ones to send while none succeeded (an empty list
        after the first means: keep trying until the lifetime runs out).
        """

    def observe_announcement(epoch):  # type: ignore[no-untyped-def]
        """An announcement from the gateway carried C{epoch}: check it as any answer's."""

    def add_state_lost_observer(observer):  # type: ignore[no-untyped-def]
        """Call C{observer(received_epoch, expected_epoch)} when the gateway lost its state."""

    def remove_state_lost_observer(observer):  # type: ignore[no-untyped-def]
        """Stop calling an observer added with L{add_state_lost_observer}."""
