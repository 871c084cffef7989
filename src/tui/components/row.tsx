import { Text } from 'ink';
import type { ReactNode } from 'react';

/** One line of the dashboard, never wrapped: whatever does not fit is cut. */
export function Row({ children, dim }: { children?: ReactNode; dim?: boolean }): ReactNode {
  return (
    <Text wrap="truncate-end" dimColor={dim}>
      {children ?? ' '}
    </Text>
  );
}

/** A section title. */
export function Title({ children }: { children: ReactNode }): ReactNode {
  return (
    <Text bold wrap="truncate-end">
      {children}
    </Text>
  );
}
