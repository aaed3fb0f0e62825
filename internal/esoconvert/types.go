package esoconvert

// The parts of ESO's and Kubernetes' objects the conversion reads. ESO's
// own Go module is not imported: it would pull in every provider's SDK.

type meta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Annotations map[string]string `json:"annotations"`
}

type object struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   meta   `json:"metadata"`
}

type externalSecret struct {
	object
	Spec struct {
		RefreshInterval string `json:"refreshInterval"`
		SecretStoreRef  struct {
			Name string `json:"name"`
			Kind string `json:"kind"`
		} `json:"secretStoreRef"`
		Target struct {
			Name           string `json:"name"`
			CreationPolicy string `json:"creationPolicy"`
			Template       *struct {
				Type string            `json:"type"`
				Data map[string]string `json:"data"`
			} `json:"template"`
		} `json:"target"`
		Data []struct {
			SecretKey string    `json:"secretKey"`
			RemoteRef remoteRef `json:"remoteRef"`
		} `json:"data"`
		DataFrom []struct {
			Extract *remoteRef `json:"extract"`
			Find    any        `json:"find"`
		} `json:"dataFrom"`
	} `json:"spec"`
}

type remoteRef struct {
	Key              string `json:"key"`
	Property         string `json:"property"`
	Version          string `json:"version"`
	DecodingStrategy string `json:"decodingStrategy"`
}

type secretStore struct {
	object
	Spec struct {
		Provider struct {
			AzureKV *struct {
				AuthType          string `json:"authType"`
				TenantID          string `json:"tenantId"`
				EnvironmentType   string `json:"environmentType"`
				VaultURL          string `json:"vaultUrl"`
				ServiceAccountRef *struct {
					Name      string `json:"name"`
					Namespace string `json:"namespace"`
				} `json:"serviceAccountRef"`
			} `json:"azurekv"`
		} `json:"provider"`
	} `json:"spec"`
}

type podSpec struct {
	ServiceAccountName string `json:"serviceAccountName"`
	ImagePullSecrets   []struct {
		Name string `json:"name"`
	} `json:"imagePullSecrets"`
	InitContainers []container `json:"initContainers"`
	Containers     []container `json:"containers"`
	Volumes        []struct {
		Name   string `json:"name"`
		Secret *struct {
			SecretName string `json:"secretName"`
		} `json:"secret"`
	} `json:"volumes"`
}

type container struct {
	Name    string   `json:"name"`
	Image   string   `json:"image"`
	Command []string `json:"command"`
	Args    []string `json:"args"`
	Env     []struct {
		Name      string `json:"name"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `json:"name"`
				Key  string `json:"key"`
			} `json:"secretKeyRef"`
		} `json:"valueFrom"`
	} `json:"env"`
	EnvFrom []struct {
		SecretRef *struct {
			Name string `json:"name"`
		} `json:"secretRef"`
	} `json:"envFrom"`
	VolumeMounts []struct {
		Name      string `json:"name"`
		MountPath string `json:"mountPath"`
	} `json:"volumeMounts"`
}

// workload is a Pod or an object with a pod template.
type workload struct {
	Kind, Namespace, Name string
	Template              struct {
		Metadata meta    `json:"metadata"`
		Spec     podSpec `json:"spec"`
	}
}
