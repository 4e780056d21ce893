"""Pure: GTID positions and their order, the checkpoint's JSON, the ownership rule."""

from __future__ import annotations

from reactor.ownership import Ownership
from reactor.storage.positions import Checkpoint, GtidState, Origin

UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"


def test_mariadb_gtid_positions_compare_domain_by_domain() -> None:
    at = GtidState("0-1-10,1-2-5")
    assert str(at.advance("0-1-11")) == "0-1-11,1-2-5"
    assert at.reached(GtidState("0-1-9")) and at.reached(GtidState("0-3-10,1-2-5"))
    assert not at.reached(GtidState("0-1-11")) and not at.reached(GtidState("2-1-1"))
    assert GtidState("").empty and not at.empty


def test_mysql_gtid_sets_compare_by_inclusion() -> None:
    """(mysql-replication's GtidSet `in` compares whole Gtids: inclusion is ours)"""
    at = GtidState(f"{UUID}:1-5")
    later = at.advance(f"{UUID}:6")
    assert str(later).lower() == f"{UUID}:1-6"
    assert later.reached(at) and not at.reached(later) and at.reached(GtidState(f"{UUID}:2-3"))


def test_checkpoints_order_by_gtid_across_servers_else_by_offset() -> None:
    a = Checkpoint("binlog.000009", 100, gtid=GtidState("0-1-20"), server="a:3306")
    b = Checkpoint("binlog.000001", 999, gtid=GtidState("0-1-19"), server="b:3306")
    assert a.reached(b) and not b.reached(a)  # the offsets say the opposite
    assert Checkpoint("binlog.000002", 4).reached(Checkpoint("binlog.000001", 900))


def test_checkpoint_json_round_trip_and_older_records() -> None:
    cp = Checkpoint("binlog.000003", 1234, Origin(2, 1795597704, "10.11"),
                    GtidState("0-1-57"), "10.0.0.7:3306")
    assert Checkpoint.from_json(cp.as_json()) == cp
    old = Checkpoint.from_json({"file": "binlog.000003", "pos": 1234})
    assert old == Checkpoint("binlog.000003", 1234) and old.gtid is None
    assert Checkpoint.from_json({"file": "b.1", "pos": 4, "gtid": "garbage"}).gtid is None


def test_ownership_rule_and_its_sql() -> None:
    seed = Ownership("web1", known=True)
    assert seed.owns("web2") and seed.where("p.host") == ("", ())
    fleet = Ownership("web1", column=True, known=True)
    assert fleet.owns("web1") and fleet.owns("WEB1 ") and not fleet.owns("web2")
    assert not fleet.owns(None) and not fleet.owns("")
    assert fleet.where("p.host") == (" AND p.host = %s", ("web1",))
    taker = Ownership("web1", take_unassigned=True, column=True, known=True)
    assert taker.owns(None) and taker.owns("") and not taker.owns("web2")
    assert taker.where("x") == (" AND COALESCE(x, '') IN (%s, '')", ("web1",))
    assert not Ownership("web1", column=True).owns("web1"), "nothing is owned before the check"
    assert Ownership("").owns("anything"), "reactor watch sees every alarm"
