-- reactor: database and tables. Run as an administrator:  mariadb < sql/setup.sql
-- PROCESE and STATUS_PROCESS are the seed schema, unchanged; REACTOR_AUDIT is the reactor's own.
CREATE DATABASE IF NOT EXISTS v_process_monitor CHARACTER SET utf8mb4;
USE v_process_monitor;

-- Processes the reactor looks after. process_name is a systemd unit (nginx -> nginx.service,
-- or a full unit name such as app@1.service) or, for the process strategy, a program name.
CREATE TABLE IF NOT EXISTS PROCESE (
  process_id INT PRIMARY KEY,
  process_name VARCHAR(100) NOT NULL
) ENGINE=InnoDB;

-- alarma = 1 asks the reactor to restart the process; it sets 0 again once the process is
-- healthy, and writes what it did in notes. sound is not used by the reactor.
CREATE TABLE IF NOT EXISTS STATUS_PROCESS (
  process_id INT PRIMARY KEY,
  alarma TINYINT NOT NULL DEFAULT 0,
  sound TINYINT NOT NULL DEFAULT 0,
  notes VARCHAR(100),
  FOREIGN KEY (process_id) REFERENCES PROCESE(process_id)
) ENGINE=InnoDB;

-- One row per step of every cycle: detected, refused, skipped (breaker open),
-- pre_restart_ok, pre_restart_failed, restart_issued, restarted, restart_failed, health_ok,
-- health_failed, error, cleared, not_cleared, breaker_open, breaker_half_open,
-- breaker_closed. latency_ms counts from the alarm's detection.
CREATE TABLE IF NOT EXISTS REACTOR_AUDIT (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  at DATETIME(6) NOT NULL,
  host VARCHAR(64) NOT NULL,
  cycle BIGINT NOT NULL,
  process_id INT NOT NULL,
  process_name VARCHAR(100),
  unit VARCHAR(255),
  step VARCHAR(32) NOT NULL,
  source VARCHAR(8),
  latency_ms DOUBLE,
  detail VARCHAR(255),
  KEY by_process (process_id, at),
  KEY by_time (at)
) ENGINE=InnoDB;

-- sample rows (safe to delete)
INSERT IGNORE INTO PROCESE (process_id, process_name) VALUES
  (1, 'nginx'), (2, 'apache2'), (3, 'postfix'), (4, 'cron');
INSERT IGNORE INTO STATUS_PROCESS (process_id, alarma, sound, notes) VALUES
  (1, 0, 0, NULL), (2, 0, 0, NULL), (3, 0, 0, NULL), (4, 0, 0, NULL);
