-- reactor: many hosts, one database (optional). Run as an administrator, once, after
-- setup.sql and grants.sql:   mariadb < sql/fleet.sql
-- Without it the seed schema works as before: every reactor acts on every process.
USE v_process_monitor;

-- Which host's reactor acts on a process: the one whose [monitor] host (default: its
-- host name) is this value. NULL: only a reactor with [monitor] take_unassigned = yes.
-- The index serves each reactor's sweep (its own rows only).
ALTER TABLE PROCESE
  ADD COLUMN IF NOT EXISTS host VARCHAR(64) NULL DEFAULT NULL,
  ADD INDEX IF NOT EXISTS by_host (host);

-- One row per reactor, kept up to date by the reactor itself every [monitor]
-- fleet_interval seconds (last_seen is the database's clock); `reactor fleet` reads it.
CREATE TABLE IF NOT EXISTS REACTOR_FLEET (
  host VARCHAR(64) NOT NULL PRIMARY KEY,
  state VARCHAR(16) NOT NULL,            -- running, stopped
  version VARCHAR(32) NOT NULL,
  pid INT,
  mode VARCHAR(8) NOT NULL,              -- binlog, poll (or starting)
  binlog_server VARCHAR(255),            -- host:port the stream reads from
  position VARCHAR(255),                 -- binlog file:offset on that server
  gtid VARCHAR(1024),                    -- GTID position (every server of the topology)
  seconds_behind DOUBLE,
  in_flight INT NOT NULL DEFAULT 0,      -- cycles in flight
  takes_unassigned TINYINT NOT NULL DEFAULT 0,
  started_at DATETIME(6),
  last_seen DATETIME(6) NOT NULL
) ENGINE=InnoDB;

-- The reactor account (as in grants.sql; add 'reactor'@'<host>' for each remote host)
-- writes its own fleet row. SLAVE MONITOR (MariaDB 10.5.9+; REPLICATION CLIENT on MySQL)
-- on a replica it reads the binlog from lets it check that the replica logs what it
-- applies (log_slave_updates); grant it there too if you prefer (it replicates anyway).
GRANT SELECT, INSERT, UPDATE ON v_process_monitor.REACTOR_FLEET TO 'reactor'@'localhost';
GRANT SLAVE MONITOR ON *.* TO 'reactor'@'localhost';
