"""Trust policy exceptions on one cluster: the original's `HandleTrustPolicyException`.

The Controller evaluates each (TPE, AppInst, cluster, cloudlet) and writes a
`TPEInstanceState`; `tpe_enable` says whether the exception's rules must be open on the
cluster. The CCRM receives the record in an `ApplyTrustPolicyException` call; a CRM on the
edge site receives it over notify and acts when `run_count` went up (each evaluation bumps
it in the same write as `tpe_enable`; a finished runner resets it to 0, which is not a
request). A record deleted while it was enabled is closed too, so rules never outlive the
record even if the Controller's last disable and the delete arrive as one change.
"""

from __future__ import annotations

from edgeproto import trustpolicyexception_pb2

from edge_cloud.crmutil._source import PlatformSource
from edge_cloud.objects import keys

__all__ = ["TpeWork"]

State = trustpolicyexception_pb2.TPEInstanceState


class TpeWork:
    """Opens or closes one TPE on one cluster through the cloudlet's platform.

    Args:
        source: Where the platform and the Controller's objects come from.
    """

    def __init__(self, source: PlatformSource) -> None:
        self._source = source

    @staticmethod
    def requested(new: State, old: State | None) -> bool:
        """Whether a notify update asks for work: a new record, or a higher `run_count`."""
        if old is None:
            return new.run_count > 0
        return new.run_count > old.run_count

    async def apply(self, state: State) -> None:
        """Open the TPE's rules on the cluster (`tpe_enable`) or close them.

        Raises:
            NotFound: The cloudlet, or (when enabling) the TPE, is not known here.
            EdgeError: What the platform raised.
        """
        key = state.key
        platform = await self._source.initialised(self._source.cloudlet(key.cloudlet_key))
        if state.tpe_enable:
            tpe = self._source.caches.trust_policy_exceptions.get(keys.key_string(key.tpe_key))
            if tpe is None:
                raise keys.not_found(key.tpe_key)
            await platform.update_trust_policy_exception(tpe, key.cluster_key)
        else:
            await platform.delete_trust_policy_exception(key.tpe_key, key.cluster_key)

    async def deleted(self, old: State) -> None:
        """A record went away: close what it had opened (nothing when it was disabled).

        Raises:
            EdgeError: What the platform raised.
        """
        if not old.tpe_enable:
            return
        closing = State()
        closing.CopyFrom(old)
        closing.tpe_enable = False
        await self.apply(closing)
