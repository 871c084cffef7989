import { Text } from 'ink';
import type { ReactNode } from 'react';
import { fit, sparkline } from '../../status/format.js';

export interface SparklineRowProps {
  label: string;
  labelWidth: number;
  values: ReadonlyArray<number | null>;
  /** Scale to this maximum (1 for ratios); default: the largest value shown. */
  max?: number;
  /** What the line says after the sparkline ("4.2/s", "73%"). */
  value: string;
  width: number;
  color?: string;
}

/** "label  ▁▂▃▅▇  value", the sparkline taking the room left (at most one point per second shown). */
export function SparklineRow({ label, labelWidth, values, max, value, width, color = 'cyan' }: SparklineRowProps): ReactNode {
  const room = Math.max(4, Math.min(values.length, width - labelWidth - value.length - 4));
  return (
    <Text wrap="truncate-end">
      {fit(label, labelWidth)}
      {'  '}
      <Text color={color}>{sparkline(values, room, max)}</Text>
      {'  '}
      <Text bold>{value}</Text>
    </Text>
  );
}
