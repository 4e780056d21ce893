-- reactor: a least-privilege account. Replace change-me, then run as an administrator:
--   mariadb < sql/grants.sql
-- The account reads the binlog (REPLICATION SLAVE), asks for the current binlog position
-- (BINLOG MONITOR; on MySQL use REPLICATION CLIENT instead), reads process names, clears
-- alarms and writes its audit rows. Nothing else.
-- 'reactor'@'localhost' matches connections from this host (socket, or 127.0.0.1 when the
-- server resolves names); add 'reactor'@'<reactor host>' for a remote server.
CREATE USER IF NOT EXISTS 'reactor'@'localhost' IDENTIFIED BY 'change-me';
GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'reactor'@'localhost';
GRANT SELECT ON v_process_monitor.PROCESE TO 'reactor'@'localhost';
GRANT SELECT, UPDATE ON v_process_monitor.STATUS_PROCESS TO 'reactor'@'localhost';
GRANT SELECT, INSERT ON v_process_monitor.REACTOR_AUDIT TO 'reactor'@'localhost';
