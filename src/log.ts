import winston from 'winston';

/** One JSON object per line on stderr, so stdout stays free for CLI output. */
export const log = winston.createLogger({
  level: process.env.VPOOL_LOG_LEVEL ?? 'info',
  format: winston.format.combine(winston.format.timestamp(), winston.format.json()),
  transports: [new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'] })],
});

export function setLogLevel(level: string): void {
  log.level = level;
}
