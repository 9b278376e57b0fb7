"""Device profiles (schema, shipped YAML, local detection), roofline projection and calibration."""
from effbench.devices.calibrate import CalibrationReport, calibrate
from effbench.devices.catalog import load_profiles, profile_show_text, profiles_list_text
from effbench.devices.detect import local_profile
from effbench.devices.profile import Figure, Profile, load_profile_file, profiles_dir, shipped_ids
from effbench.devices.project import project_record, project_work
from effbench.devices.references import CheckReport, check_references

__all__ = ["CalibrationReport", "CheckReport", "Figure", "Profile", "calibrate", "check_references", "load_profile_file",
           "load_profiles", "local_profile", "profile_show_text", "profiles_dir", "profiles_list_text",
           "project_record", "project_work", "shipped_ids"]
