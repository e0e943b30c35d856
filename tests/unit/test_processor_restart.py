"""Which errors the processor rides out by rebuilding its application (``processors.app``)."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from quixstreams.exceptions import PartitionAssignmentError

from processors.app import transient


def raised_from(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as exc:
            raise outer from exc
    except BaseException as exc:
        return exc


def test_broker_outage_errors_are_ridden_out() -> None:
    unknown = KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION))
    assert transient(raised_from(PartitionAssignmentError("assignment"), unknown))
    assert transient(KafkaException(KafkaError(KafkaError._TRANSPORT)))
    assert transient(KafkaException(KafkaError(KafkaError.NOT_COORDINATOR)))
    # a producer fenced after an outage longer than the transaction timeout: a new one is due
    assert transient(KafkaException(KafkaError(KafkaError._FENCED)))


def test_other_errors_end_the_process() -> None:
    assert not transient(ValueError("a bug"))
    assert not transient(raised_from(RuntimeError("wrapped"), KeyError("x")))
    # another replica runs with this replica's group.instance.id: a configuration error
    fenced = KafkaException(KafkaError(KafkaError.FENCED_INSTANCE_ID))
    assert not transient(raised_from(PartitionAssignmentError("assignment"), fenced))


def test_a_rebalance_during_state_recovery_is_ridden_out() -> None:
    # seen under load: Quix 3.28 handed a changelog record to the dataframes and the
    # processor exited ("KeyError: 'changelog__<group>--<topic>--default'")
    assert transient(KeyError("changelog__drops-processor--drops.snapshots--default"))
    assert transient(RuntimeError("Recovery stuck for changelog__x[0]: position invalid"))
    assert not transient(KeyError("venue_id"))
    assert not transient(RuntimeError("something else"))
