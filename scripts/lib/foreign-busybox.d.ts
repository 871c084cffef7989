/** Types of foreign-busybox.js (plain JavaScript so that scripts run without a build). */
export declare const DOWNLOAD_CACHE: string;
export declare function debianBusybox(debArch: string, cacheDir?: string): { path?: string; why?: string };
