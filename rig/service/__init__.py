"""Running the rig as a service: sd_notify, the progress watchdog, the status file, metrics."""
