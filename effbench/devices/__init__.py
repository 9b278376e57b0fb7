"""Device profiles (schema, shipped YAML, local detection), roofline projection and calibration."""
from effbench.devices.calibrate import CalibrationReport, calibrate
from effbench.devices.detect import local_profile
from effbench.devices.profile import (Figure, Profile, load_profile_file, load_profiles,
                                      profile_show_text, profiles_dir, profiles_list_text, shipped_ids)
from effbench.devices.project import project_record

__all__ = ["CalibrationReport", "Figure", "Profile", "calibrate", "load_profile_file",
           "load_profiles", "local_profile", "profile_show_text", "profiles_dir", "profiles_list_text",
           "project_record", "shipped_ids"]
